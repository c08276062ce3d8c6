//! `broadcast-server` on every available model with `broadcast-load` against it: 8 clients for
//! about a second on loopback (ephemeral port). Checks the JSON reports' shape and that
//! snapshots flowed; no timing assertions. The server runs until the test closes its stdin
//! after the load generator finished (its `--duration-secs` is only a hang guard), so how
//! late a loaded machine starts the load generator does not matter.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The number after `"key":` in a one-line JSON object.
fn number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing: {json}"))
        + pat.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} not a number: {json}"))
}

#[test]
fn server_and_load_generator_agree_on_every_model() {
    let list = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
        .arg("--list-models")
        .output()
        .unwrap();
    assert!(list.status.success());
    let models = String::from_utf8(list.stdout).unwrap();
    assert!(models.lines().any(|m| m == "blocking"), "{models}");
    for model in models.lines() {
        let mut server = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
            .args([
                "--model",
                model,
                "--clients-expected",
                "8",
                "--bind",
                "127.0.0.1:0",
            ])
            .args(["--warmup-secs", "0.3", "--duration-secs", "600"])
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{model}: unexpected first line {line:?}"))
            .trim()
            .to_owned();
        let load = Command::new(env!("CARGO_BIN_EXE_broadcast-load"))
            .args(["--server", &addr, "--clients", "8"])
            .args(["--duration-secs", "0.8", "--warmup-secs", "0.3"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        drop(server.stdin.take()); // EOF: the server stops and prints its report
        let out = server.wait_with_output().unwrap();
        assert!(load.status.success(), "{model}: load failed: {load:?}");
        let load_json = String::from_utf8(load.stdout).unwrap();
        let server_json = String::from_utf8(out.stdout).unwrap();
        assert!(
            server_json.contains(&format!("\"server\":\"{model}\"")),
            "{server_json}"
        );
        assert_eq!(number(&server_json, "clients_known"), 8.0, "{server_json}");
        assert!(number(&server_json, "ticks") > 0.0, "{server_json}");
        assert!(number(&server_json, "inputs") > 0.0, "{server_json}");
        assert_eq!(number(&load_json, "clients"), 8.0, "{load_json}");
        assert_eq!(
            number(&load_json, "snapshots_expected"),
            400.0,
            "{load_json}"
        );
        assert!(
            number(&load_json, "snapshots_received") > 0.0,
            "{load_json}"
        );
        assert!(number(&load_json, "load_cpu_cores") >= 0.0, "{load_json}");
    }
}
