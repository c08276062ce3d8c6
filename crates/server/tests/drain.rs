//! Drain and health on the real process: SIGTERM with a grace period denies new players as
//! "draining", tells the connected ones, and exits 0 (when everyone left, or when the grace
//! ran out); a second signal exits at once; /healthz turns unhealthy when the tick loop stalls
//! and /readyz is false while draining.
//!
//! Only what needs a real process is asserted here, and never a duration: every wait is for an
//! event (a log line, an answer, an exit status) under a generous hang guard. The timing itself
//! (the grace is waited for exactly, the drain ends on the first tick after the last player
//! left, /healthz turns stale exactly after its limit) is proved on virtual time by the unit
//! tests of `run::Drain` and `admin::respond` (crates/server/src/run.rs, admin.rs).

mod support;

use std::time::Instant;

use support::{eventually, ServerProc, Swarm, GUARD};
use tickwire_client::{ByeReason, ClientState};

/// A drain grace no test waits for: exiting within [`GUARD`] proves the drain ended early.
const LONG_GRACE: &str = "3600";

fn sigterm(server: &ServerProc) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits (bounded) for a log line containing every needle; returns it.
fn wait_log(server: &ServerProc, needles: &[&str]) -> String {
    let deadline = Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.log.recv_timeout(left) {
            Ok(line) => {
                eprintln!("server: {line}");
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
            }
            Err(e) => panic!("no log line with {needles:?}: {e}"),
        }
    }
}

/// Connects `n` bots and waits (bounded) until they all are.
fn connected_swarm(server: &ServerProc, n: usize) -> Swarm {
    let mut swarm = Swarm::new(server, n);
    swarm.run(GUARD, true, &mut |s| s.connected() == n);
    assert_eq!(swarm.connected(), n);
    swarm
}

/// During the drain: clients are told and stay connected, /readyz fails while /healthz passes,
/// a new player is denied and counted as draining; then everyone leaves and the process exits 0
/// long before the grace (it is an hour).
#[test]
fn sigterm_drains_and_exits_zero_once_everyone_left() {
    let mut server = ServerProc::start(&["--drain-grace-secs", LONG_GRACE]);
    let n = 5;
    let mut swarm = connected_swarm(&server, n);
    assert_eq!(server.http_get("/readyz").0, 200);

    sigterm(&server);
    // Connected clients are told the server is draining, and stay connected meanwhile.
    swarm.run(GUARD, true, &mut |s| s.bots.iter().all(|b| b.bye));
    assert!(
        swarm
            .bots
            .iter()
            .all(|b| b.bye_reason == Some(ByeReason::Draining)),
        "every client was told the server is draining"
    );
    assert_eq!(swarm.connected(), n, "still connected during the grace");
    assert_eq!(
        server.http_get("/readyz").0,
        503,
        "not ready while draining"
    );
    assert_eq!(
        server.http_get("/healthz").0,
        200,
        "still live while draining"
    );

    // A new player is denied, counted as draining.
    let mut late = Swarm::with_first_id(&server, 1, 1000);
    let mut state = ClientState::SendingConnectionRequest;
    late.run(GUARD, false, &mut |s| {
        state = s.bots[0].client.state();
        state == ClientState::ConnectionDenied
    });
    assert_eq!(state, ClientState::ConnectionDenied, "new player denied");
    // Counters are exported once a tick.
    eventually("the denial counted as draining", || {
        server.metric_sum("connects_denied_total{reason=\"draining\"}") >= 1.0
    });

    // Everyone leaves: the drain ends (the grace is an hour) and the process exits 0.
    for bot in swarm.bots.iter_mut() {
        let link = &mut bot.link;
        bot.client.disconnect(&mut |to, b| link.send(to, b));
    }
    wait_log(&server, &["drain finished", "everyone_left"]);
    let status = server.wait(GUARD);
    assert!(
        status.success(),
        "exits 0 once the last player left: {status:?}"
    );
}

/// Players who never leave: the grace runs out, they are all told and disconnected, exit 0.
#[test]
fn sigterm_with_players_staying_exits_zero_after_the_grace() {
    let mut server = ServerProc::start(&["--drain-grace-secs", "1"]);
    let n = 3;
    let mut swarm = connected_swarm(&server, n);
    sigterm(&server);
    // Keep the bots playing (so none times out) until the process is gone.
    let mut status = None;
    let child = &mut server.child;
    swarm.run(GUARD, true, &mut |_| {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.expect("the server exits after its grace");
    assert!(status.success(), "exit status {status:?}");
    let line = wait_log(&server, &["drain finished"]);
    assert!(line.contains("grace_expired"), "ended by the grace: {line}");
    assert!(
        !line.contains("\"players\":0"),
        "players were still there: {line}"
    );
    // Everyone was told (Draining, then ServerShutdown) and disconnected: the packets were
    // sent before the exit, so they are already in the bots' socket buffers.
    swarm.run(GUARD, false, &mut |s| s.bots.iter().all(|b| b.disconnected));
    assert!(
        swarm.bots.iter().all(|b| b.bye && b.disconnected),
        "clients told and disconnected at the end"
    );
}

/// A second stop signal during the drain exits at once with status 1; the drain itself (its
/// grace is an hour) would have ended with status 0.
#[test]
fn second_signal_exits_at_once() {
    let mut server = ServerProc::start(&["--drain-grace-secs", LONG_GRACE]);
    let _swarm = connected_swarm(&server, 2);
    sigterm(&server);
    // The loop has seen the first signal: it is draining, not exiting.
    wait_log(&server, &["draining: new players are denied"]);
    assert!(server.child.try_wait().unwrap().is_none(), "still draining");
    sigterm(&server);
    let status = server.wait(GUARD);
    assert_eq!(
        status.code(),
        Some(1),
        "the second signal aborts the drain: {status:?}"
    );
}

#[test]
fn healthz_fails_when_the_tick_loop_stalls() {
    let dir = std::env::temp_dir().join(format!("tickwire-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stall = dir.join("stall");
    let server =
        ServerProc::start_with_env(&[], &[("TICKWIRE_TEST_STALL_FILE", stall.as_os_str())]);
    eventually("/healthz 200 while ticking", || {
        server.http_get("/healthz").0 == 200
    });
    // The loop stalls for as long as the file exists: /healthz turns (and stays) unhealthy.
    std::fs::write(&stall, b"").unwrap();
    eventually("/healthz 503 while the loop is stalled", || {
        server.http_get("/healthz").0 == 503
    });
    std::fs::remove_file(&stall).unwrap();
    eventually("/healthz 200 once ticking resumes", || {
        server.http_get("/healthz").0 == 200
    });
    let _ = std::fs::remove_dir_all(&dir);
}
