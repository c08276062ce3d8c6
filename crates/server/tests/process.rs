//! The real `tickwire serve` process: signals, the admin endpoint under idle connections, and
//! startup under an address-space limit. Loopback, ephemeral ports, bounded.

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::ServerProc;

/// Generous hang guard for waits that normally end in milliseconds.
const GUARD: Duration = Duration::from_secs(30);

fn kill(server: &ServerProc, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
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

/// Waits (bounded) until, for each needle set, some log line contains all its needles, in
/// whatever order the lines come (lines from different threads are not ordered).
fn wait_logs(server: &ServerProc, sets: &[&[&str]]) {
    let mut seen = vec![false; sets.len()];
    let deadline = Instant::now() + GUARD;
    while seen.contains(&false) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server
            .log
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no log lines with {sets:?} (seen {seen:?}): {e}"));
        eprintln!("server: {line}");
        for (set, seen) in sets.iter().zip(seen.iter_mut()) {
            *seen |= set.iter().all(|n| line.contains(n));
        }
    }
}

#[test]
fn hup_usr1_usr2_are_logged_and_never_fatal() {
    let mut server = ServerProc::start(&["--max-players", "8", "--io-model", "epoll"]);
    for (sig, needles) in [
        ("HUP", &["SIGHUP", "reload is not supported"][..]),
        (
            "USR1",
            &[
                "SIGUSR1",
                "state summary",
                "\"players\":0",
                "\"ticks\":",
                "\"backend\":\"epoll\"",
                "\"uptime_secs\":",
            ][..],
        ),
        ("USR2", &["SIGUSR2", "ignored"][..]),
    ] {
        kill(&server, sig);
        wait_log(&server, needles);
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "SIG{sig} killed the server"
        );
        // Still serving: the tick loop advances and the admin endpoint answers.
        assert_eq!(server.http_get("/healthz"), (200, "ok\n".to_owned()));
    }
    let status = server.terminate(GUARD);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigquit_stops_like_sigterm() {
    let mut server = ServerProc::start(&["--max-players", "8", "--io-model", "epoll"]);
    kill(&server, "QUIT");
    // The signal thread's line and the loop's may come in either order.
    wait_logs(&server, &[&["SIGQUIT", "stopping"], &["shutting down"]]);
    let status = server.wait(GUARD);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn healthcheck_passes_while_idle_connections_are_held() {
    let mut server = ServerProc::start(&["--max-players", "8", "--io-model", "epoll"]);
    let metrics = server.metrics_addr.unwrap();
    // Idle clients that never send a request, just under the 64-connection limit. The old
    // endpoint served one connection at a time with a 2 s deadline each: 60 idle sockets
    // outlasted even the 30 s hang guard below. (admin::tests proves the concurrency
    // structurally, with connections held for the whole test.)
    let idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect_timeout(&metrics, GUARD).unwrap())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["healthcheck", "--addr", &metrics.to_string()])
        .args(["--timeout-secs", "30"]) // hang guard only
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "healthcheck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = server.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("admin_connections_dropped_total{reason=\"busy\"} 0"));
    drop(idle);
    assert_eq!(server.terminate(GUARD).code(), Some(0));
}

fn have_prlimit() -> bool {
    let ok = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("prlimit not installed (util-linux): skipping");
    }
    ok
}

const MIB: u64 = 1024 * 1024;

#[test]
fn starts_and_serves_under_a_generous_address_space_limit() {
    if !have_prlimit() {
        return;
    }
    // The default config reserves about 44 MiB (debug build, epoll, 2048 players); 8 players
    // about 34 MiB. 256 MiB is generous, yet in the range (144-166 MiB and up) where glibc's
    // 64 MiB per-thread malloc arenas used to crowd out the start-up tables.
    let limit = format!("--as={}", 256 * MIB);
    let mut server = ServerProc::start_under(
        &["prlimit", &limit, "--"],
        &["--max-players", "8", "--io-model", "epoll"],
        &[],
    );
    assert!(
        server
            .startup_log
            .iter()
            .any(|l| l.contains("address-space limit 256 MiB")),
        "{:#?}",
        server.startup_log
    );
    // Re-executed with one malloc arena.
    let environ = std::fs::read(format!("/proc/{}/environ", server.child.id())).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == b"MALLOC_ARENA_MAX=1"),
        "MALLOC_ARENA_MAX=1 not in the server's environment"
    );
    assert_eq!(server.http_get("/healthz"), (200, "ok\n".to_owned()));
    let (status, _) = server.http_get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(server.terminate(GUARD).code(), Some(0));
}

#[test]
fn too_small_an_address_space_limit_is_a_clear_error() {
    if !have_prlimit() {
        return;
    }
    // Enough for the dynamic loader and main, far below what even 8 players reserve.
    let dir = std::env::temp_dir().join(format!("tickwire-as-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.key");
    std::fs::write(&key, [1u8; 32]).unwrap();
    let mut child = Command::new("prlimit")
        .arg(format!("--as={}", 24 * MIB))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .args(["--max-players", "8", "--io-model", "epoll"])
        .arg("--key-file")
        .arg(&key)
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started under a 24 MiB limit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(1), "{status:?}: {stderr}");
    assert!(
        stderr.contains("the address-space limit (RLIMIT_AS, ulimit -v) is 24 MiB, below"),
        "{stderr}"
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
}
