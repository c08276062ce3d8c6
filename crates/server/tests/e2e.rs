//! End to end: the real `tickwire` binary on loopback, bots from the client library.
//!
//! The same test body runs against every backend this machine has (`tickwire_io::available_models`).

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::{ServerProc, Swarm, Transport, GUARD};

/// The original specification's test: a server and 100 clients connect; the server reports
/// 100 connected players.
#[test]
fn hundred_clients_connect_and_server_reports_them() {
    let server = ServerProc::start(&["--max-players", "128"]);
    let mut swarm = Swarm::new(&server, 100);
    swarm.run(GUARD, true, &mut |s| s.connected() == 100);
    assert_eq!(swarm.connected(), 100, "all 100 clients connected");
    // The server publishes the gauge after a tick: keep the bots playing until it does.
    let mut reported = 0.0;
    let deadline = std::time::Instant::now() + GUARD;
    while reported != 100.0 && std::time::Instant::now() < deadline {
        swarm.run(Duration::from_millis(40), true, &mut |_| false);
        reported = server.metric_sum("players_connected");
    }
    assert_eq!(reported, 100.0, "server reports 100 connected players");
}

/// The same test over TCP: 100 TCP clients connect; the server reports 100 connected players,
/// all of them on TCP.
#[test]
fn hundred_tcp_clients_connect_and_server_reports_them() {
    let server = ServerProc::start(&["--max-players", "128"]);
    let mut swarm = Swarm::over(&server, 100, 1, Transport::Tcp);
    swarm.run(GUARD, true, &mut |s| s.connected() == 100);
    assert_eq!(swarm.connected(), 100, "all 100 TCP clients connected");
    let mut reported = (0.0, 0.0);
    let deadline = std::time::Instant::now() + GUARD;
    while reported != (100.0, 100.0) && std::time::Instant::now() < deadline {
        swarm.run(Duration::from_millis(40), true, &mut |_| false);
        let body = server.http_get("/metrics").1;
        reported = (
            support::metric_sum(&body, "players_connected"),
            support::metric_sum(&body, "players_by_transport{transport=\"tcp\"}"),
        );
    }
    assert_eq!(
        reported,
        (100.0, 100.0),
        "server reports 100 connected players, 100 on TCP"
    );
}

fn play_on(model: &str, game: &str, transport: Transport, extra: &[&str]) {
    let mut args = vec!["--io-model", model, "--io-fallback", "none", "--game", game];
    args.extend_from_slice(extra);
    let mut server = ServerProc::start(&args);
    let label = format!("{model}/{game}/{}", transport.as_str());
    let n = 20;
    let mut swarm = Swarm::over(&server, n, 1, transport);
    swarm.run(GUARD, true, &mut |s| s.connected() == n);
    assert_eq!(swarm.connected(), n, "{label}: all bots connected");
    // Play until every bot has seen what is asserted below (not for a fixed time: how much
    // a loaded machine gets through in a second is a figure for the benchmarks).
    let done =
        |b: &support::Bot| b.messages >= 1 && b.snapshots >= 20 && b.last_applied > 0 && b.moved;
    swarm.run(GUARD, true, &mut |s| s.bots.iter().all(done));
    for (i, bot) in swarm.bots.iter().enumerate() {
        assert_eq!(bot.game.as_deref(), Some(game), "{label}: bot {i} welcome");
        assert!(
            bot.messages >= 1,
            "{label}: bot {i} got the game's join event"
        );
        assert!(
            bot.snapshots >= 20,
            "{label}: bot {i} got {} snapshots",
            bot.snapshots
        );
        assert!(bot.last_applied > 0, "{label}: bot {i} inputs applied");
        assert!(bot.first_pos.is_some(), "{label}: bot {i} saw itself");
        assert!(bot.moved, "{label}: bot {i} moved");
    }
    let body = server.http_get("/metrics").1;
    assert!(
        support::metric_sum(&body, "io_events_processed_total") > 0.0,
        "{label}: io events"
    );
    assert!(
        body.contains(&format!("io_wait_duration_ms_bucket{{backend=\"{model}\"")),
        "{label}: io wait histogram buckets"
    );

    // SIGTERM: clients are told, the process exits 0.
    let status = server.terminate(GUARD);
    assert!(status.success(), "{label}: exit status {status:?}");
    swarm.run(GUARD, false, &mut |s| {
        s.bots.iter().all(|b| b.bye || b.disconnected)
    });
    let told = swarm
        .bots
        .iter()
        .filter(|b| b.bye || b.disconnected)
        .count();
    assert_eq!(
        told, n,
        "{label}: every client was told the server is going away"
    );
}

#[test]
fn play_on_every_backend() {
    for model in tickwire_io::available_models() {
        if model == tickwire_io::Model::Auto {
            continue;
        }
        for transport in Transport::ALL {
            play_on(model.as_str(), "arena", transport, &[]);
        }
        // Tag's default coins are max_players / 2: 1024 at the default 2048 slots, which a
        // debug build cannot step in 16 ms. 64 slots (32 coins) is plenty for 20 bots.
        play_on(
            model.as_str(),
            "tag",
            Transport::Udp,
            &["--max-players", "64"],
        );
    }
}

/// `serve --list-games` prints the built-in games, one a line; an unknown `--game` is refused
/// with a message naming the allowed ones.
#[test]
fn list_games_and_unknown_game() {
    let dir = std::env::temp_dir().join(format!("tickwire-games-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tickwire = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .current_dir(&dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let list = tickwire(&["serve", "--list-games"]);
    assert!(list.status.success(), "{list:?}");
    assert_eq!(String::from_utf8_lossy(&list.stdout), "arena\ntag\n");

    let bad = tickwire(&[
        "serve",
        "--game",
        "nope",
        "--bind",
        "127.0.0.1:0",
        "--metrics-bind",
        "off",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!bad.status.success(), "must not serve: {bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("\"nope\""), "names the game: {stderr}");
    assert!(
        stderr.contains("allowed: arena, tag"),
        "names the allowed games: {stderr}"
    );
}

/// Hostile datagrams on the game port: dropped and counted, never a larger reply, and the
/// connected bots keep playing.
#[test]
fn hostile_traffic_is_dropped_and_never_amplified() {
    let server = ServerProc::start(&[]);
    let n = 10;
    let mut swarm = Swarm::new(&server, n);
    swarm.run(GUARD, true, &mut |s| s.connected() == n);
    assert_eq!(swarm.connected(), n);
    let before: Vec<u64> = swarm.bots.iter().map(|b| b.snapshots).collect();

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let mut rng = 0x1234_5678_u64;
    let mut biggest_ratio = 0.0f64;
    let mut buf = [0u8; 2048];
    for i in 0..2000usize {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = match i % 5 {
            0 => 1078,                    // connection-request sized garbage
            1 => 1 + (rng % 40) as usize, // tiny
            2 => 1500,                    // oversized
            _ => (rng % 1400) as usize,
        };
        let mut pkt = vec![0u8; len];
        for (j, b) in pkt.iter_mut().enumerate() {
            *b = (rng >> ((j % 8) * 8)) as u8 ^ j as u8;
        }
        if i % 7 == 0 && !pkt.is_empty() {
            pkt[0] = 0; // looks like a connection request
        }
        let _ = attacker.send_to(&pkt, server.game_addr);
        while let Ok((got, _)) = attacker.recv_from(&mut buf) {
            biggest_ratio = biggest_ratio.max(got as f64 / len.max(1) as f64);
            assert!(
                got <= len,
                "a {len}-byte datagram earned a {got}-byte reply"
            );
        }
        if i % 100 == 0 {
            swarm.run(Duration::from_millis(16), true, &mut |_| false);
        }
    }
    // Every bot keeps receiving snapshots (played until each has 20 more, hang guard).
    swarm.run(GUARD, true, &mut |s| {
        s.bots
            .iter()
            .zip(&before)
            .all(|(b, before)| b.snapshots > before + 20)
    });
    assert_eq!(swarm.connected(), n, "bots stay connected");
    for (i, bot) in swarm.bots.iter().enumerate() {
        assert!(
            bot.snapshots > before[i] + 20,
            "bot {i} kept receiving snapshots"
        );
    }
    let dropped = server.metric_sum("packets_dropped_total");
    assert!(
        dropped >= 1000.0,
        "hostile packets are counted as drops: {dropped}"
    );
    assert!(biggest_ratio <= 1.0);
}

/// `tickwire healthcheck` succeeds against a running server and fails once it is gone.
#[test]
fn healthcheck_subcommand() {
    let mut server = ServerProc::start(&[]);
    let addr = server.metrics_addr.unwrap().to_string();
    let check = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["healthcheck", "--addr", &addr, "--path", path])
            .output()
            .unwrap()
    };
    // Live and ready once the loop runs (ready is set when it starts: wait for that).
    support::eventually("/readyz 200", || server.http_get("/readyz").0 == 200);
    assert!(check("/healthz").status.success());
    assert!(check("/readyz").status.success());
    assert!(server.terminate(GUARD).success());
    let gone = check("/healthz");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot reach"));
}
