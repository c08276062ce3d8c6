//! The I/O model's forced-failure path, end to end: with io_uring made to fail (the io crate's
//! `TICKWIRE_IO_FORCE_FAIL` test hook), `--io-fallback none` exits non-zero with a message
//! naming the model and the cause, and the default fallback serves on `blocking` instead.

mod support;

use std::process::{Command, Stdio};

use support::{ServerProc, Swarm, GUARD};

#[test]
fn forced_io_uring_failure_without_fallback_exits_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("tickwire-ff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .current_dir(&dir)
        .args(["serve", "--bind", "127.0.0.1:0", "--metrics-bind", "off"])
        .args(["--io-model", "io_uring", "--io-fallback", "none"])
        .env("TICKWIRE_IO_FORCE_FAIL", "io_uring")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "must not serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("io.model = io_uring"), "{stderr}");
    assert!(stderr.contains("io.fallback = none"), "{stderr}");
    assert!(stderr.contains("EPERM"), "names the cause: {stderr}");
    assert!(stderr.contains("--io-model epoll"), "and the fix: {stderr}");
    assert!(!stderr.contains("unknown environment variable"), "{stderr}");
}

#[test]
fn forced_io_uring_failure_falls_back_to_blocking_and_serves() {
    let server = ServerProc::start_with_env(
        &["--io-model", "io_uring"],
        &[("TICKWIRE_IO_FORCE_FAIL", "io_uring".as_ref())],
    );
    let fallback = server
        .startup_log
        .iter()
        .find(|l| l.contains("falling back to blocking"))
        .expect("the fallback is logged");
    assert!(fallback.contains("EPERM"), "with its reason: {fallback}");
    // The backend's metrics appear once the loop has run: poll, bounded.
    support::eventually("serving on blocking", || {
        server
            .http_get("/metrics")
            .1
            .contains("backend=\"blocking\"")
    });

    let mut swarm = Swarm::new(&server, 3);
    swarm.run(GUARD, true, &mut |s| s.connected() == 3);
    assert_eq!(swarm.connected(), 3, "clients play on the fallback backend");
}

/// A model this platform does not have is refused whatever `io.fallback` says (the default
/// fallback is for models that exist but fail to start), naming the models it does have.
#[test]
fn a_model_this_platform_lacks_is_a_clear_error() {
    let missing = if cfg!(target_os = "linux") {
        ["kqueue", "iocp"]
    } else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tickwire-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for model in missing {
        let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .current_dir(&dir)
            .args(["serve", "--bind", "127.0.0.1:0", "--metrics-bind", "off"])
            .args(["--io-model", model])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{model}: must not serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("io.model = {model}")), "{stderr}");
        for have in ["epoll", "select", "blocking"] {
            assert!(stderr.contains(have), "{model}: names {have}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
