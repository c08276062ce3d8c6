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
        "obstacles = 32",
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
