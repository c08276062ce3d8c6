//! Drain and health: SIGTERM with a grace period denies new players as "draining", tells the
//! connected ones, and exits 0 after the grace; a second signal exits at once; /healthz turns
//! unhealthy when the tick loop stalls and /readyz is false while draining.

mod support;

use std::time::{Duration, Instant};

use support::{ServerProc, Swarm};
use tickwire_client::{ByeReason, ClientState};

fn sigterm(server: &ServerProc) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let mut server = ServerProc::start(&["--drain-grace-secs", "2"]);
    let n = 5;
    let mut swarm = Swarm::new(&server, n);
    swarm.run(Duration::from_secs(15), true, &mut |s| s.connected() == n);
    assert_eq!(swarm.connected(), n);
    assert_eq!(server.http_get("/readyz").0, 200);

    sigterm(&server);
    let signalled = Instant::now();
    // Connected clients are told the server is draining, and stay connected meanwhile.
    swarm.run(Duration::from_secs(2), true, &mut |s| {
        s.bots.iter().all(|b| b.bye)
    });
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
    late.run(Duration::from_millis(1500), false, &mut |s| {
        state = s.bots[0].client.state();
        state == ClientState::ConnectionDenied
    });
    assert_eq!(state, ClientState::ConnectionDenied, "new player denied");
    // Counters are exported once a tick: allow a few.
    let mut denied = 0.0;
    for _ in 0..20 {
        denied = server.metric_sum("connects_denied_total{reason=\"draining\"}");
        if denied >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(denied >= 1.0, "denial counted as draining: {denied}");

    // After the grace, everyone is told and the process exits 0.
    let status = server.wait(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1900),
        "waited for the grace"
    );
    swarm.run(Duration::from_millis(300), false, &mut |s| {
        s.bots.iter().all(|b| b.disconnected)
    });
    assert!(
        swarm.bots.iter().all(|b| b.disconnected),
        "clients disconnected at the end"
    );
}

#[test]
fn drain_ends_early_when_everyone_left() {
    let mut server = ServerProc::start(&["--drain-grace-secs", "30"]);
    let mut swarm = Swarm::new(&server, 3);
    swarm.run(Duration::from_secs(15), true, &mut |s| s.connected() == 3);
    sigterm(&server);
    swarm.run(Duration::from_millis(200), true, &mut |_| false);
    for bot in swarm.bots.iter_mut() {
        let socket = &bot.socket;
        bot.client.disconnect(&mut |to, b| {
            let _ = socket.send_to(b, to);
        });
    }
    let status = server.wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "exits 0 once the last player left: {status:?}"
    );
}

#[test]
fn second_signal_exits_at_once() {
    let mut server = ServerProc::start(&["--drain-grace-secs", "30"]);
    let mut swarm = Swarm::new(&server, 2);
    swarm.run(Duration::from_secs(15), true, &mut |s| s.connected() == 2);
    sigterm(&server);
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.child.try_wait().unwrap().is_none(), "still draining");
    let second = Instant::now();
    sigterm(&server);
    let status = server.wait(Duration::from_secs(3));
    assert!(second.elapsed() < Duration::from_secs(2));
    assert!(!status.success(), "the second signal aborts the drain");
}

#[test]
fn healthz_fails_when_the_tick_loop_stalls() {
    let dir = std::env::temp_dir().join(format!("tickwire-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stall = dir.join("stall");
    let server =
        ServerProc::start_with_env(&[], &[("TICKWIRE_TEST_STALL_FILE", stall.as_os_str())]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.http_get("/healthz").0, 200);
    std::fs::write(&stall, b"").unwrap();
    let mut code = 200;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && code == 200 {
        std::thread::sleep(Duration::from_millis(100));
        code = server.http_get("/healthz").0;
    }
    assert_eq!(
        code, 503,
        "/healthz turns unhealthy while the loop is stalled"
    );
    std::fs::remove_file(&stall).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && code != 200 {
        std::thread::sleep(Duration::from_millis(50));
        code = server.http_get("/healthz").0;
    }
    assert_eq!(code, 200, "healthy again once ticking resumes");
    let _ = std::fs::remove_dir_all(&dir);
}
