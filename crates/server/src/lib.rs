//! tickwire: the dedicated server shell, for any game. Parses the command line and dispatches:
//! `serve` (the tick loop), `token` (mint a connect token), `check-config`, `replay`,
//! `healthcheck`.
//!
//! Thin by design: configuration lives in `config`, the loop in `run`, the game behind the
//! `tickwire_game::Game` trait. The `tickwire` binary is [`main_with_games`] with the built-in
//! games; a studio's server binary calls it with its own list and keeps the whole CLI, config,
//! metrics, A2S, Agones, drain and recording:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     tickwire::main_with_games(vec![/* my_game::entry() */])
//! }
//! ```
#![forbid(unsafe_code)]

mod addrspace;
mod admin;
mod agones;
mod cli;
mod config;
mod http;
mod keyfile;
mod logging;
mod metrics;
mod net;
mod run;
mod signals;
mod web;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use tickwire_core::{CoreConfig, GameServer};
use tickwire_game::{GameConfig, GameEntry};
use tickwire_io::{Backend, Model};

/// The whole `tickwire` command line, serving `games` (the first is the default). An empty list
/// is an error.
pub fn main_with_games(games: Vec<GameEntry>) -> ExitCode {
    let cli = cli::Cli::parse();
    if games.is_empty() {
        eprintln!("tickwire: this binary was built without any game");
        return ExitCode::FAILURE;
    }
    match cli.command {
        cli::Command::CheckConfig(args) => check_config(&args, &games),
        cli::Command::Serve(args) if args.list_games => {
            for g in &games {
                println!("{}", g.name);
            }
            ExitCode::SUCCESS
        }
        cli::Command::Serve(args) => report(serve(&args, &games)),
        cli::Command::Token(args) => report(token(&args)),
        cli::Command::Replay(args) => replay(&args, &games),
        cli::Command::Healthcheck(args) => report(healthcheck(&args)),
    }
}

/// The game `cfg` names (or the first), and the config to build it with.
fn choose_game<'a>(
    cfg: &config::Config,
    games: &'a [GameEntry],
) -> anyhow::Result<(&'a GameEntry, GameConfig)> {
    let entry = match &cfg.server.game {
        Some(name) => tickwire_game::find(games, name).map_err(anyhow::Error::msg)?,
        None => &games[0],
    };
    let mut options = cfg.game_options.clone();
    // `world.obstacles` (kept for compatibility) is the game option `obstacles` when set.
    if let Some(o) = cfg.world.obstacles {
        if !options.iter().any(|(k, _)| k == "obstacles") {
            options.push(("obstacles".into(), o.to_string()));
        }
    }
    let game_cfg = GameConfig {
        seed: cfg.world.seed,
        max_players: cfg.server.max_players,
        tick_ms: cfg.server.tick_ms.min(u32::from(u16::MAX)) as u16,
        options,
    };
    Ok((entry, game_cfg))
}

/// Builds the game, turning an option error into one naming `game.KEY`.
fn build_game(
    entry: &GameEntry,
    game_cfg: &GameConfig,
) -> anyhow::Result<Box<dyn tickwire_game::Game>> {
    (entry.build)(game_cfg)
        .map_err(|e| anyhow::anyhow!("invalid configuration: game {}: game.{}", entry.name, e))
}

/// `tickwire replay FILE`: re-run a recording, check every tick's state hash.
fn replay(args: &cli::ReplayArgs, games: &[GameEntry]) -> ExitCode {
    let file = match std::fs::File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tickwire: cannot open {}: {e}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    match tickwire_core::record::replay(games, reader, &mut |_, _| {}) {
        Ok(s) => {
            println!(
                "replayed {}: game {} seed {}, {} calls",
                args.file.display(),
                s.game,
                s.seed,
                s.calls
            );
            println!("ok: {} ticks, final hash {:016x}", s.ticks, s.final_hash);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickwire: replay {}: {e}", args.file.display());
            ExitCode::FAILURE
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickwire: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tickwire serve`: validate everything, bind, run the tick loop until SIGTERM/SIGINT.
fn serve(args: &cli::ServeArgs, games: &[GameEntry]) -> anyhow::Result<()> {
    // Under an address-space limit: one malloc arena (re-executes once, before any thread).
    let arenas_capped = addrspace::cap_malloc_arenas();
    // Validation comes first: nothing is opened for a bad config.
    let cfg = config::load(args)?;
    let (entry, game_cfg) = choose_game(&cfg, games)?;
    let game = build_game(entry, &game_cfg)?;
    logging::init(&cfg.log.level, cfg.log.format);
    addrspace::startup_check(&cfg, arenas_capped)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let key = keyfile::load_or_create(&cfg.auth.key_file)?;

    // A first SIGTERM/SIGINT/SIGQUIT asks the loop to stop (clients are told); a second exits
    // at once. HUP/USR1/USR2 are logged and never fatal (signals.rs).
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in signals::STOP_SIGNALS {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&shutdown))?;
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }

    let health = Arc::new(admin::Health::new());
    let _signal_logger = signals::spawn(Arc::clone(&health))?;
    // The config refuses dev tokens unless metrics.bind is a loopback address.
    let dev_tokens = match cfg.metrics.dev_tokens {
        true => Some(Arc::new(web::DevTokens::new(key, cfg.auth.protocol_id)?)),
        false => None,
    };
    let admin = match cfg.metrics.bind {
        Some(bind) => {
            let handle = metrics::install()?;
            let opts = admin::AdminOptions {
                dev_tokens: dev_tokens.clone(),
                ..admin::AdminOptions::default()
            };
            let server = admin::spawn_with(bind, handle, Arc::clone(&health), opts)
                .with_context(|| format!("metrics.bind = {bind}: cannot listen"))?;
            tracing::info!(metrics_addr = %server.local_addr(), "metrics at /metrics");
            tracing::info!("browser client at http://{}/play", server.local_addr());
            if dev_tokens.is_some() {
                tracing::warn!(
                    "--dev-tokens is ON: http://{}/token hands a connect token to any local \
                     process that asks. Development only: never in production (docs/operations.md)",
                    server.local_addr()
                );
            }
            Some(server)
        }
        None => {
            tracing::info!("metrics endpoint off");
            None
        }
    };

    log_fd_limit();
    let (backend, sock, listener) = open_game_port(&cfg)?;
    let bound = backend.local_addr(sock)?;
    // Tokens must name this server. With an explicit public address, only it is accepted;
    // otherwise a wildcard bind accepts tokens naming any address on the bound port.
    let accepted: SocketAddr = match cfg.server.public_addr {
        Some(addr) => addr,
        None => bound,
    };
    if let Some(dev) = &dev_tokens {
        // As `tickwire token` lists it.
        dev.set_game_addr(cfg.server.advertised_addr(bound), bound);
    }
    let spec = game.spec();
    tracing::info!(
        game = %spec.name,
        game_version = spec.version,
        seed = game_cfg.seed,
        options = ?game_cfg.options,
        "game"
    );
    let mut server = GameServer::new(
        CoreConfig {
            protocol_id: cfg.auth.protocol_id,
            private_key: key,
            max_players: cfg.server.max_players,
            public_addrs: vec![accepted],
            tick_ms: cfg.server.tick_ms.min(u32::from(u16::MAX)) as u16,
            snapshot_max_entities: cfg.snapshot.max_entities,
            channel: tickwire_core::ChannelConfig::default(),
            query: match cfg.query.enabled {
                true => Some(tickwire_core::QueryConfig {
                    name: cfg.server.name.clone(),
                    port: cfg.server.advertised_addr(bound).port(),
                    secret: random_u64()?,
                    rules: vec![("seed".into(), game_cfg.seed.to_string())],
                }),
                false => None,
            },
        },
        game,
    );
    if let Some(path) = &args.record {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--record {}: cannot create", path.display()))?;
        let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, file));
        let rec = tickwire_core::record::Recorder::new(out, &spec.name, spec.version, &game_cfg)
            .with_context(|| format!("--record {}: cannot write", path.display()))?;
        server.start_recording(rec);
        tracing::info!(file = %path.display(), "recording every tick for `tickwire replay`");
    }
    tracing::info!(
        game_addr = %bound,
        advertised_addr = %cfg.server.advertised_addr(bound),
        backend = backend.model().as_str(),
        streams = if listener.is_some() { "tcp+ws" } else { "off" },
        max_connections = cfg.server.max_connections,
        tick_ms = cfg.server.tick_ms,
        max_players = cfg.server.max_players,
        protocol_id = format_args!("{:#x}", cfg.auth.protocol_id),
        "serving"
    );

    // Agones: Health pings while the loop ticks, Ready now (retried until the sidecar answers).
    let agones = cfg.agones.enabled.then(|| {
        if let Some(origin @ config::Origin::Env(_)) = cfg.origins.get("agones.enabled") {
            tracing::info!("agones.enabled: set by {origin} (running in an Agones GameServer)");
        }
        let live = Arc::clone(&health);
        let agones = agones::Agones::start(
            agones::AgonesOptions::from_env(cfg.agones.health_interval()),
            Box::new(move || live.is_live(std::time::Instant::now())),
        );
        agones.set_players(0);
        agones.ready();
        agones
    });

    let net = net::Net::new(
        backend,
        sock,
        net::StreamLimits {
            auth_timeout: cfg.server.auth_timeout(),
        },
    );
    let summary = run::run(run::RunParams {
        net,
        server,
        tick: cfg.server.tick(),
        timeout: cfg.io.timeout(),
        max_events: cfg.io.max_events,
        shutdown,
        drain_grace: cfg.server.drain_grace(),
        health,
        agones,
    })?;
    tracing::info!(
        ticks = summary.ticks,
        overruns = summary.overruns,
        "stopped"
    );
    if let Some(admin) = admin {
        admin.shutdown();
    }
    Ok(())
}

/// A random u64 from the OS (the A2S challenge secret).
fn random_u64() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Opens the backend and binds the game port: UDP, and (unless `server.max_connections` is 0)
/// the same port number over TCP for the stream transports. With port 0 the kernel picks the
/// UDP port and TCP takes the same number; if TCP cannot have it, the whole attempt is
/// retried on a new port (a few times).
fn open_game_port(
    cfg: &config::Config,
) -> anyhow::Result<(
    Box<dyn Backend>,
    tickwire_io::SocketId,
    Option<tickwire_io::SocketId>,
)> {
    const ATTEMPTS: usize = 8;
    let bind = cfg.server.bind;
    for attempt in 1..=ATTEMPTS {
        let mut backend = open_backend(cfg)?;
        let sock = backend
            .bind(bind)
            .with_context(|| format!("server.bind = {bind}: cannot bind UDP"))?;
        if cfg.server.max_connections == 0 {
            return Ok((backend, sock, None));
        }
        let udp = backend.local_addr(sock)?;
        let tcp = SocketAddr::new(bind.ip(), udp.port());
        match backend.listen(tcp) {
            Ok(listener) => return Ok((backend, sock, Some(listener))),
            Err(e) if bind.port() == 0 && attempt < ATTEMPTS => {
                tracing::debug!(%tcp, error = %e, "TCP port taken; binding another port");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "server.bind = {bind}: cannot listen on TCP {tcp} for the stream transports \
                     (set server.max_connections = 0 to serve UDP only)"
                )))
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Raises the descriptor limit to its hard limit (each stream connection is a descriptor) and
/// logs the result.
fn log_fd_limit() {
    match tickwire_io::raise_fd_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(
                from = before,
                to = after,
                "raised the open-file limit (RLIMIT_NOFILE)"
            )
        }
        Ok((_, now)) => tracing::info!(limit = now, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// Opens the configured I/O model: one attempt, then the configured fallback, logging why.
fn open_backend(cfg: &config::Config) -> anyhow::Result<Box<dyn Backend>> {
    let io_cfg = tickwire_io::Config {
        max_events: cfg.io.max_events,
        send_queue: cfg.io.send_queue,
        stream_send_bytes: cfg.io.stream_send_bytes,
        max_connections: cfg.server.max_connections.max(1),
        ..tickwire_io::Config::default()
    };
    let model = cfg.io.model;
    match tickwire_io::open(model, &io_cfg) {
        Ok(backend) => {
            if model == Model::Auto {
                match tickwire_io::probe_io_uring() {
                    Ok(flags) => tracing::info!(
                        backend = backend.model().as_str(),
                        "io.model = auto chose {} (io_uring ring flags {flags})",
                        backend.model()
                    ),
                    Err(why) => tracing::info!(
                        backend = backend.model().as_str(),
                        "io.model = auto chose {}: {why}",
                        backend.model()
                    ),
                }
            } else {
                tracing::info!(backend = backend.model().as_str(), "io backend ready");
            }
            Ok(backend)
        }
        // A model this platform does not have is a configuration mistake, not a start-up
        // failure: refused whatever io.fallback says (the error names the models it has).
        Err(e @ tickwire_io::OpenError::Unsupported { .. }) => {
            Err(anyhow::anyhow!("io.model = {model}: {e}"))
        }
        Err(e) => match cfg.io.fallback {
            config::IoFallback::None => Err(anyhow::anyhow!(
                "io.model = {model}: {e} (io.fallback = none)"
            )),
            config::IoFallback::Blocking => {
                tracing::warn!(
                    requested = model.as_str(),
                    error = %e,
                    "io.model = {model} failed to start; falling back to blocking (io.fallback)"
                );
                tickwire_io::open(Model::Blocking, &io_cfg).map_err(|e2| {
                    anyhow::anyhow!("io.model = {model}: {e}; fallback blocking: {e2}")
                })
            }
        },
    }
}

/// `tickwire token`: mint a standard 2048-byte netcode 1.02 connect token.
fn token(args: &cli::TokenArgs) -> anyhow::Result<()> {
    let cfg = config::load(&args.config_overrides())?;
    let key = keyfile::load(&cfg.auth.key_file)?;
    let servers = args
        .server_addrs(cfg.server.public_addr())
        .map_err(anyhow::Error::msg)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = tickwire_netcode::generate_connect_token(&tickwire_netcode::TokenParams {
        protocol_id: cfg.auth.protocol_id,
        client_id: args.client_id,
        create_unix_secs: now,
        expire_secs: args.expire_secs,
        timeout_secs: args.timeout_secs,
        server_addrs: &servers,
        user_data: [0; tickwire_netcode::USER_DATA_BYTES],
        private_key: &key,
    })?;
    match &args.out {
        Some(path) => std::fs::write(path, token)
            .with_context(|| format!("--out {}: cannot write", path.display()))?,
        None => {
            let text = base64::engine::general_purpose::STANDARD.encode(token);
            writeln!(std::io::stdout(), "{text}")?;
        }
    }
    Ok(())
}

/// `tickwire healthcheck`: one HTTP GET on the admin endpoint; success means a 200 answer.
fn healthcheck(args: &cli::HealthcheckArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
    let mut stream = std::net::TcpStream::connect_timeout(&args.addr, timeout)
        .with_context(|| format!("cannot reach {}", args.addr))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.path, args.addr
    )?;
    let mut response = Vec::with_capacity(512);
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let head_end = http::find(&response, b"\r\n\r\n").unwrap_or(response.len());
    match http::parse_response_head(&response[..head_end]) {
        Some((200, _)) => {
            println!("healthy: {} {}", args.addr, args.path);
            Ok(())
        }
        Some((status, _)) => {
            anyhow::bail!("unhealthy: {} {} answered {status}", args.addr, args.path)
        }
        None => anyhow::bail!("unhealthy: {} {}: not an HTTP answer", args.addr, args.path),
    }
}

/// `tickwire check-config`: validate, print the effective config on stdout, exit 1 on any error.
fn check_config(args: &cli::ServeArgs, games: &[GameEntry]) -> ExitCode {
    let cfg = match config::load(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("tickwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &cfg.warnings {
        eprintln!("tickwire: warning: {w}");
    }
    if let Err(e) = choose_game(&cfg, games).and_then(|(entry, gc)| build_game(entry, &gc)) {
        eprintln!("tickwire: {e:#}");
        return ExitCode::FAILURE;
    }
    match keyfile::check(&cfg.auth.key_file) {
        Ok(keyfile::KeyFileStatus::Present) => {}
        Ok(keyfile::KeyFileStatus::Missing) => eprintln!(
            "tickwire: note: key file {} does not exist yet; `serve` will create it",
            cfg.auth.key_file.display()
        ),
        Err(e) => {
            eprintln!("tickwire: invalid configuration: auth.key_file: {e}");
            return ExitCode::FAILURE;
        }
    }
    match &cfg.file {
        Some(p) => println!("# effective configuration (file: {})", p.display()),
        None => println!("# effective configuration (no config file: defaults)"),
    }
    print!("{cfg}");
    ExitCode::SUCCESS
}
