//! `tickwire check-config` end to end: the real binary, a scrubbed environment and a private
//! working directory per test, so nothing on the host (TICKWIRE_* variables, a stray
//! config/server.toml) leaks in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/server.toml")
}

/// A fresh, empty working directory for one test.
fn workdir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tickwire-config-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
    cmd.arg("check-config")
        .args(args)
        .current_dir(dir)
        .env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run tickwire");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn assert_fails_with(r: &Run, needles: &[&str]) {
    assert_ne!(r.code, Some(0), "expected failure; stdout:\n{}", r.stdout);
    assert!(r.code.is_some(), "killed by a signal?");
    for n in needles {
        assert!(r.stderr.contains(n), "stderr lacks {n:?}:\n{}", r.stderr);
    }
    assert!(
        r.stdout.is_empty(),
        "no config printed on error:\n{}",
        r.stdout
    );
}

#[test]
fn shipped_config_is_valid_and_printed() {
    let dir = workdir("shipped");
    let cfg = repo_config();
    let r = run(&dir, &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    for line in [
        "[server]",
        "bind = \"0.0.0.0:7777\"",
        "tick_ms = 16",
        "max_players = 2048",
        "name = \"Tickwire\"",
        "drain_grace_secs = 0",
        "[metrics]",
        "bind = \"127.0.0.1:9464\"",
        "model = \"auto\"",
        "max_events = 1024",
        "timeout_ms = 16",
        "fallback = \"blocking\"",
        "send_queue = 8192",
        "key_file = \"tickwire.key\"",
        "protocol_id = 0x7469636b77697265",
        "level = \"info\"",
        "format = \"text\"",
        "seed = 1",
        "# obstacles: not set (deprecated; use [game] obstacles)",
        "max_entities = 48",
        "[query]",
        "enabled = true",
        "[agones]",
        "enabled = false",
        "health_interval_secs = 2",
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            r.stdout
        );
    }

    // The printed config is itself a valid config that yields the same output.
    let printed = write(&dir, "printed.toml", &r.stdout);
    let again = run(&dir, &["--config", &printed], &[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again.stdout), body(&r.stdout));
}

#[test]
fn shipped_config_lists_every_key_with_its_default() {
    let text = std::fs::read_to_string(repo_config()).unwrap();
    let dir = workdir("keys");
    let defaults = run(&dir, &[], &[]);
    assert_eq!(defaults.code, Some(0), "{}", defaults.stderr);
    // Every key of the default output appears in the shipped file with the same value.
    for line in defaults
        .stdout
        .lines()
        .filter(|l| l.contains(" = ") && !l.starts_with('#'))
    {
        assert!(
            text.lines().any(|l| l == line),
            "config/server.toml lacks {line:?}"
        );
    }
    assert!(text.contains("# public_addr = "), "public_addr documented");
}

#[test]
fn max_events_out_of_range_from_file_env_and_flag() {
    let dir = workdir("max-events");
    let file = write(&dir, "c.toml", "[io]\nmax_events = 5\n");
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(
        &r,
        &["io.max_events = 5: must be in 64..=10000", "c.toml:2"],
    );

    let r = run(&dir, &[], &[("TICKWIRE_IO_MAX_EVENTS", "10001")]);
    assert_fails_with(
        &r,
        &["io.max_events = 10001: must be in 64..=10000 (from env TICKWIRE_IO_MAX_EVENTS)"],
    );

    let r = run(&dir, &["--max-events", "lots"], &[]);
    assert_fails_with(
        &r,
        &[
            "io.max_events = \"lots\": must be an integer in 64..=10000",
            "--max-events",
        ],
    );
}

#[test]
fn timeout_ms_out_of_range_from_file_env_and_flag() {
    let dir = workdir("timeout");
    let file = write(&dir, "c.toml", "[io]\ntimeout_ms = -1\n");
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(&r, &["io.timeout_ms = -1: must be in 0..=1000"]);

    let r = run(&dir, &[], &[("TICKWIRE_TIMEOUT_MS", "5000")]);
    assert_fails_with(
        &r,
        &["io.timeout_ms = 5000: must be in 0..=1000 (from env TICKWIRE_TIMEOUT_MS)"],
    );

    let r = run(&dir, &["--timeout-ms", "1001"], &[]);
    assert_fails_with(
        &r,
        &["io.timeout_ms = 1001: must be in 0..=1000 (from --timeout-ms)"],
    );
}

#[test]
fn drain_name_query_and_agones_keys_are_checked() {
    let dir = workdir("new-keys");
    let file = write(
        &dir,
        "c.toml",
        "[server]\ndrain_grace_secs = 3601\n[agones]\nhealth_interval_secs = 61\n",
    );
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(
        &r,
        &[
            "2 problems",
            "server.drain_grace_secs = 3601: must be in 0..=3600 (from ",
            "c.toml:2)",
            "agones.health_interval_secs = 61: must be in 1..=60",
            "c.toml:4)",
        ],
    );

    let r = run(&dir, &["--drain-grace-secs", "-5"], &[]);
    assert_fails_with(
        &r,
        &["server.drain_grace_secs = -5: must be in 0..=3600 (from --drain-grace-secs)"],
    );
    let long = "n".repeat(64);
    let r = run(&dir, &["--name", &long], &[]);
    assert_fails_with(
        &r,
        &[
            "server.name = \"nnnn",
            "must be a string of 1..=63 bytes",
            "(from --name)",
        ],
    );
    let r = run(&dir, &[], &[("TICKWIRE_QUERY_ENABLED", "maybe")]);
    assert_fails_with(
        &r,
        &["query.enabled = \"maybe\": must be true or false (from env TICKWIRE_QUERY_ENABLED)"],
    );

    // Valid values are printed with their origin.
    let r = run(
        &dir,
        &["--agones", "--drain-grace-secs", "30", "--name", "EU #1"],
        &[("TICKWIRE_QUERY_ENABLED", "false")],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let has = |line: &str| r.stdout.lines().any(|l| l == line);
    assert!(
        has("drain_grace_secs = 30  # from --drain-grace-secs"),
        "{}",
        r.stdout
    );
    assert!(has("name = \"EU #1\"  # from --name"), "{}", r.stdout);
    assert!(
        has("enabled = false  # from env TICKWIRE_QUERY_ENABLED"),
        "{}",
        r.stdout
    );
    assert!(has("enabled = true  # from --agones"), "{}", r.stdout);
}

#[test]
fn agones_sidecar_port_turns_agones_on() {
    let dir = workdir("agones-env");
    let r = run(&dir, &[], &[("AGONES_SDK_HTTP_PORT", "9358")]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "enabled = true  # from env AGONES_SDK_HTTP_PORT"),
        "{}",
        r.stdout
    );
    let r = run(
        &dir,
        &[],
        &[
            ("AGONES_SDK_HTTP_PORT", "9358"),
            ("TICKWIRE_AGONES_ENABLED", "false"),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "enabled = false  # from env TICKWIRE_AGONES_ENABLED"),
        "{}",
        r.stdout
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = workdir("all");
    let file = write(
        &dir,
        "c.toml",
        "[io]\nmax_events = 5\n[server]\ntick_ms = 0\n",
    );
    let r = run(
        &dir,
        &["--config", &file, "--io-model", "kqueue2"],
        &[("TICKWIRE_IO_TIMEOUT_MS", "2000")],
    );
    assert_fails_with(
        &r,
        &[
            "4 problems",
            "io.max_events = 5",
            "server.tick_ms = 0",
            "io.model",
            "io.timeout_ms = 2000",
        ],
    );
}

#[test]
fn unknown_key_names_key_section_and_allowed_keys() {
    let dir = workdir("unknown");
    let file = write(&dir, "c.toml", "[io]\nmodel = \"epoll\"\nmax_event = 100\n");
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(
        &r,
        &[
            "c.toml:3: unknown key `max_event` in section [io]",
            "allowed keys in [io]: model, max_events, timeout_ms, fallback, send_queue",
        ],
    );
    let file = write(&dir, "d.toml", "[netcode]\nx = 1\n");
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(
        &r,
        &[
            "unknown section [netcode]",
            "allowed sections: server, metrics, io",
        ],
    );
}

#[test]
fn broken_toml_names_the_line() {
    let dir = workdir("broken");
    let file = write(
        &dir,
        "c.toml",
        "[server]\ntick_ms = 16\n\n[io\nmax_events = 100\n",
    );
    let r = run(&dir, &["--config", &file], &[]);
    assert_fails_with(&r, &["c.toml: invalid TOML", "line 4"]);
}

#[test]
fn unknown_io_model_lists_allowed_values() {
    let dir = workdir("model");
    let expected = "io.model = \"kqueue2\": \
                    must be one of auto, epoll, io_uring, kqueue, iocp, select, blocking";
    let file = write(&dir, "c.toml", "[io]\nmodel = \"kqueue2\"\n");
    assert_fails_with(&run(&dir, &["--config", &file], &[]), &[expected]);
    assert_fails_with(
        &run(&dir, &["--io-model", "kqueue2"], &[]),
        &[expected, "--io-model"],
    );
    assert_fails_with(
        &run(&dir, &[], &[("TICKWIRE_IO_MODEL", "kqueue2")]),
        &[expected],
    );
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = workdir("precedence");
    let file = write(
        &dir,
        "c.toml",
        "[io]\nmax_events = 100\ntimeout_ms = 5\nsend_queue = 300\n[server]\ntick_ms = 20\n",
    );
    let r = run(
        &dir,
        &[
            "--config",
            &file,
            "--max-events",
            "300",
            "--log-format",
            "json",
        ],
        &[
            ("TICKWIRE_IO_MAX_EVENTS", "200"),
            ("TICKWIRE_IO_TIMEOUT_MS", "6"),
            ("TICKWIRE_SERVER_BIND", "127.0.0.1:9000"),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let has = |line: &str| r.stdout.lines().any(|l| l == line);
    assert!(has("max_events = 300  # from --max-events"), "{}", r.stdout);
    assert!(
        has("timeout_ms = 6  # from env TICKWIRE_IO_TIMEOUT_MS"),
        "{}",
        r.stdout
    );
    assert!(
        has("bind = \"127.0.0.1:9000\"  # from env TICKWIRE_SERVER_BIND"),
        "{}",
        r.stdout
    );
    assert!(has("send_queue = 300"), "{}", r.stdout);
    assert!(has("tick_ms = 20"), "{}", r.stdout);
    assert!(
        has("format = \"json\"  # from --log-format"),
        "{}",
        r.stdout
    );
    assert!(has("model = \"auto\""), "{}", r.stdout);
    assert!(r
        .stdout
        .contains("# public_addr unset: clients are told \"127.0.0.1:9000\""));
}

#[test]
fn config_path_rules() {
    let dir = workdir("paths");
    // A named file must exist.
    let r = run(&dir, &["--config", "missing.toml"], &[]);
    assert_fails_with(
        &r,
        &["config file missing.toml (named by --config) does not exist"],
    );
    let r = run(&dir, &[], &[("TICKWIRE_CONFIG", "gone.toml")]);
    assert_fails_with(
        &r,
        &["gone.toml (named by env TICKWIRE_CONFIG) does not exist"],
    );

    // Without --config: defaults when config/server.toml is absent ...
    let r = run(&dir, &[], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("# effective configuration (no config file"),
        "{}",
        r.stdout
    );

    // ... and config/server.toml when present.
    std::fs::create_dir_all(dir.join("config")).unwrap();
    write(&dir, "config/server.toml", "[server]\nmax_players = 7\n");
    let r = run(&dir, &[], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("(file: config/server.toml)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().any(|l| l == "max_players = 7"),
        "{}",
        r.stdout
    );
}

#[test]
fn bad_key_file_fails_check() {
    let dir = workdir("keyfile");
    write(&dir, "short.key", "not 32 bytes");
    let r = run(&dir, &["--key-file", "short.key"], &[]);
    assert_fails_with(&r, &["auth.key_file", "short.key is 12 bytes long"]);
    // A missing key file is fine (serve creates it) and check-config does not create it.
    let r = run(&dir, &["--key-file", "new.key"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("does not exist yet"), "{}", r.stderr);
    assert!(!dir.join("new.key").exists());
}

#[test]
fn unknown_tickwire_variables_warn_only() {
    let dir = workdir("warn");
    let r = run(&dir, &[], &[("TICKWIRE_IO_MAX_EVENT", "5")]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r
        .stderr
        .contains("warning: ignoring unknown environment variable TICKWIRE_IO_MAX_EVENT"));
}

/// Runs `tickwire <args>` (any subcommand) like [`run`].
fn run_cmd(dir: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .expect("run tickwire");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

#[test]
fn unknown_section_does_not_hide_other_problems() {
    let dir = workdir("unknown-section");
    let file = write(
        &dir,
        "c.toml",
        "[nope]\nx = 1\n[io]\nmax_events = 5\nbogus = 1\n[server]\ntick_ms = 0\n",
    );
    let r = run(&dir, &["--config", &file, "--max-players", "0"], &[]);
    assert_fails_with(
        &r,
        &[
            "5 problems",
            "c.toml:1: unknown section [nope]",
            "c.toml:5: unknown key `bogus` in section [io]",
            "io.max_events = 5: must be in 64..=10000",
            "server.tick_ms = 0: must be in 1..=1000",
            "server.max_players = 0: must be in 1..=16384 (from --max-players)",
        ],
    );
}

#[test]
fn key_file_that_is_not_a_regular_file_says_what_it_is() {
    let dir = workdir("keyfile-kinds");
    std::fs::create_dir_all(dir.join("keydir")).unwrap();
    let r = run(&dir, &["--key-file", "keydir"], &[]);
    assert_fails_with(
        &r,
        &["auth.key_file", "keydir is a directory, not a regular file"],
    );
    assert!(!r.stderr.contains("bytes long"), "{}", r.stderr);
    // serve refuses it the same way, before opening anything.
    let r = run_cmd(
        &dir,
        &["serve", "--key-file", "keydir", "--bind", "127.0.0.1:0"],
    );
    assert_fails_with(&r, &["keydir is a directory, not a regular file"]);

    let made = Command::new("mkfifo").arg(dir.join("keyfifo")).status();
    if made.is_ok_and(|s| s.success()) {
        let r = run(&dir, &["--key-file", "keyfifo"], &[]);
        assert_fails_with(&r, &["keyfifo is a FIFO (named pipe), not a regular file"]);
        assert!(!r.stderr.contains("0 bytes long"), "{}", r.stderr);
    }
}

#[test]
fn os_errors_are_printed_once() {
    let dir = workdir("os-error-once");
    write(&dir, "plain", "x");
    // "plain/k": the OS says ENOTDIR (the same path as EACCES, which root cannot provoke).
    for args in [
        &["token", "--client-id", "1", "--key-file", "plain/k"][..],
        &[
            "serve",
            "--key-file",
            "plain/k",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "off",
        ][..],
    ] {
        let r = run_cmd(&dir, args);
        assert_fails_with(&r, &["plain/k", "(os error 20)"]);
        assert_eq!(r.stderr.matches("os error").count(), 1, "{}", r.stderr);
    }
}

#[test]
fn token_expires_in_30_seconds_by_default() {
    let dir = workdir("token-expiry");
    std::fs::write(dir.join("k.key"), [7u8; 32]).unwrap();
    let lifetime = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "--client-id",
            "1",
            "--key-file",
            "k.key",
            "--server",
            "127.0.0.1:7777",
            "--out",
            "t.bin",
        ];
        args.extend_from_slice(extra);
        let r = run_cmd(&dir, &args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let t = std::fs::read(dir.join("t.bin")).unwrap();
        assert_eq!(t.len(), 2048);
        // netcode 1.02 connect token: create timestamp at 21, expire timestamp at 29.
        let create = u64::from_le_bytes(t[21..29].try_into().unwrap());
        let expire = u64::from_le_bytes(t[29..37].try_into().unwrap());
        expire - create
    };
    assert_eq!(lifetime(&[]), 30);
    assert_eq!(lifetime(&["--expire-secs", "3600"]), 3600);
    let help = run_cmd(&dir, &["token", "--help"]);
    assert!(help.stdout.contains("[default: 30]"), "{}", help.stdout);
}
